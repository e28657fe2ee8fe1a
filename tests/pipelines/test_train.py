"""Both training stages on a real local Ray with real DeepSpeed on 2 CPU workers, tracked in a real MLflow store."""

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from pipelines.defaults import embedded_model_dir
from pipelines.train.config import TrainConfig
from pipelines.train.job import run_stage
from pipelines.train.launch import resolve_stage1
from sp_core.loading import load_llava_sp
from sp_core.modeling import LlavaSPForConditionalGeneration

pytestmark = pytest.mark.integration
COMMON = dict(num_workers=2, micro_batch_size=4, checkpoint_every=4, max_steps=8, keep_checkpoints=2,
              lr=2e-3, warmup_ratio=0.1)


@pytest.fixture(scope="module")
def stage1(ray_session, environment):
    return run_stage(TrainConfig(stage="pretrain", storage_path=str(environment / "runs"), **COMMON))


@pytest.fixture(scope="module")
def stage2(ray_session, environment, stage1):
    return run_stage(TrainConfig(stage="finetune", init_from=str(stage1.checkpoint), lora_r=8, lora_alpha=16,
                                 storage_path=str(environment / "runs"), **COMMON))


def _base_model() -> LlavaSPForConditionalGeneration:
    return LlavaSPForConditionalGeneration.from_pretrained(embedded_model_dir("cropping"))


def _losses(result) -> list[float]:
    history = MlflowClient(result.tracking_uri).get_metric_history(result.run_id, "loss")
    by_step = {}
    for metric in sorted(history, key=lambda m: m.timestamp):
        by_step[metric.step] = metric.value
    return [by_step[step] for step in sorted(by_step)]


def test_stage1_trains_only_the_projector(stage1):
    trained = LlavaSPForConditionalGeneration.from_pretrained(stage1.model_dir)
    base = _base_model()
    for name, tensor in base.state_dict().items():
        if "multi_modal_projector" in name:
            continue
        assert torch.equal(tensor, trained.state_dict()[name]), name
    changed = [name for name, tensor in base.projector.state_dict().items()
               if not torch.equal(tensor, trained.projector.state_dict()[name])]
    assert any("spatial_extractor" in name for name in changed) and any("linear_1" in name for name in changed)
    saved = load_file(stage1.checkpoint / "projector.safetensors")
    assert all(torch.equal(saved[name], trained.projector.state_dict()[name]) for name in saved)


def test_stage2_trains_only_lora_and_the_projector(stage1, stage2):
    adapter = load_file(stage2.checkpoint / "adapter" / "adapter_model.safetensors")
    assert adapter and all("language_model" in name and "lora_" in name for name in adapter)
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in adapter)
    trained = LlavaSPForConditionalGeneration.from_pretrained(stage2.model_dir)
    base = _base_model()
    lora_targets = {name.split(".lora_")[0].replace("base_model.model.", "") for name in adapter}
    for name, tensor in base.state_dict().items():
        if "multi_modal_projector" in name:
            continue
        module = name.rsplit(".", 1)[0]
        if module in lora_targets:
            assert not torch.equal(tensor, trained.state_dict()[name]), f"{name} should hold the merged LoRA"
        else:
            assert torch.equal(tensor, trained.state_dict()[name]), name
    stage1_projector = load_file(stage1.checkpoint / "projector.safetensors")
    stage2_projector = trained.projector.state_dict()
    assert any(not torch.equal(stage1_projector[name], stage2_projector[name]) for name in stage1_projector)


def test_loss_falls_in_both_stages(stage1, stage2):
    for result in (stage1, stage2):
        losses = _losses(result)
        assert len(losses) == 8
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.01, losses


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_final_checkpoint_reloads_with_the_live_models_logits(stage, request):
    result = request.getfixturevalue(stage)
    probe = load_file(result.checkpoint / "probe.safetensors")
    model, _ = load_llava_sp(result.model_dir)
    inputs = {name: tensor for name, tensor in probe.items() if name != "logits"}
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, probe["logits"], atol=1e-4, rtol=1e-4)


def test_mlflow_run_holds_params_metrics_and_artifacts(stage2):
    client = MlflowClient(stage2.tracking_uri)
    run = client.get_run(stage2.run_id)
    params = run.data.params
    assert (params["stage"], params["variant"], params["world_size"], params["lora_r"]) == ("finetune", "cropping",
                                                                                           "2", "8")
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s"):
        assert len({m.step for m in client.get_metric_history(stage2.run_id, key)}) == 8, key
    artifacts = {item.path for item in client.list_artifacts(stage2.run_id)}
    assert {"config.yaml", "plots", "checkpoint"} <= artifacts
    assert "plots/loss.png" in {item.path for item in client.list_artifacts(stage2.run_id, "plots")}
    state = json.loads((stage2.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["final"] and state["samples_seen"] == 64


def test_the_finetuned_model_is_evaluated_from_its_mlflow_run_through_the_ray_path(stage2, environment):
    # Here rather than in test_evaluate.py because it reuses this module's trained model (training again would cost
    # CI minutes): the model comes from the stage-2 MLflow run, the answers from Ray Data actors.
    from pipelines.defaults import embedded_dataset
    from pipelines.evaluate.config import EvalModel, EvaluateConfig
    from pipelines.evaluate.run import evaluate
    from sp_core.image_decoding import load_rgb_image
    from sp_core.inference import GenerationRequest, LlavaSPGenerator, SamplingParams

    result = evaluate(EvaluateConfig(models=[EvalModel(name="trained", source=f"mlflow:{stage2.run_id}")],
                                     max_questions=10, max_new_tokens=3, attention_maps=1, experiment="eval-trained",
                                     output_dir=str(environment / "eval-trained")))
    scores = result.scores["trained"]["synthetic"]
    assert (scores["questions"], scores["missing"], scores["eval_errors"]) == (10, 0, 0)
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.model_run_ids["trained"])
    assert run.data.metrics["synthetic/accuracy"] == scores["accuracy"]
    assert run.data.params["model.source"] == f"mlflow:{stage2.run_id}"
    # The scores also land on the training run, where the runs table can sort training runs by them.
    assert run.data.tags["training_run_id"] == stage2.run_id
    assert client.get_run(stage2.run_id).data.metrics["synthetic/accuracy"] == scores["accuracy"]
    assert [item.path for item in client.list_artifacts(run.info.run_id, "plots/attention")] == [
        "plots/attention/attention_0.png"]
    answers = client.download_artifacts(run.info.run_id, "predictions/synthetic/answers.jsonl")
    first = json.loads(Path(answers).read_text().splitlines()[0])
    # The Ray path answers exactly what the trained model says through sp_core directly.
    dataset = embedded_dataset()
    question = json.loads(dataset.test_jsonl.read_text().splitlines()[0])
    generator = LlavaSPGenerator.from_pretrained(stage2.model_dir)
    direct = generator.generate([GenerationRequest([f"<image>\n{question['text']}"],
                                                   [load_rgb_image(dataset.root / question["image"])],
                                                   SamplingParams(max_new_tokens=3))])[0]
    assert first["question_id"] == question["question_id"] and first["text"] == direct.text


def test_stage2_can_start_from_a_stage1_mlflow_run(stage1):
    directory = resolve_stage1(f"mlflow:{stage1.run_id}", stage1.tracking_uri)
    downloaded = load_file(directory / "projector.safetensors")
    original = load_file(stage1.checkpoint / "projector.safetensors")
    assert downloaded.keys() == original.keys()
    assert all(torch.equal(downloaded[name], original[name]) for name in original)


def test_step_loss_is_the_token_weighted_mean_over_workers_and_micro_batches(stage1):
    """Step 1 runs on the untrained model: its logged loss must equal sum(token losses) / (target tokens) over the
    whole global batch (both workers' micro-batches), recomputed here in one process from the plan."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    from pipelines.train.data import collate, target_tokens
    from pipelines.train.plan import make_plan, plan_table
    from pipelines.train.shards import ShardRowReader, shard_index
    from sp_core.image_processing import LlavaSPImageProcessor

    params = MlflowClient(stage1.tracking_uri).get_run(stage1.run_id).data.params
    index = shard_index(params["data_dir"])
    plan = make_plan(index.column("modality_length").to_numpy(), 2, 4, 1, 1, 42, 8)
    model_dir = embedded_model_dir("cropping")
    model = _base_model()
    pad = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    processor = LlavaSPImageProcessor.from_pretrained_dir(model_dir)
    total_loss, total_tokens = 0.0, 0
    for rank in range(2):
        rows = ShardRowReader()(plan_table(plan, rank, index).slice(0, 4))
        batch = collate(rows, pad, processor)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits
        total_loss += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                        ignore_index=-100, reduction="sum").item()
        total_tokens += target_tokens(labels)
    assert isinstance(rows, pa.Table) and total_tokens > 0
    assert _losses(stage1)[0] == pytest.approx(total_loss / total_tokens, abs=1e-5)


def test_a_workers_dataset_yields_its_planned_rows_in_plan_order_and_pauses_when_idle(stage1):
    """Each read task gets a whole block of the plan (many micro-batches, rows from many row groups and files): the
    rows must still come back one for one, in plan order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data.idle_pause import PauseWhenIdle
    from pipelines.train.launch import worker_dataset
    from pipelines.train.plan import make_plan, plan_table
    from pipelines.train.shards import shard_index

    index = shard_index(MlflowClient(stage1.tracking_uri).get_run(stage1.run_id).data.params["data_dir"])
    plan = make_plan(index.column("modality_length").to_numpy(), 2, 4, 1, 2, 7)
    rows = plan_table(plan, 1, index)
    dataset = worker_dataset(rows, TrainConfig(micro_batch_size=4), image_size=336)  # the whole plan in one block
    read = pa.concat_tables(dataset.iter_batches(batch_size=4, batch_format="pyarrow"))

    ids = {path: pq.read_table(path, columns=["id"]).column("id").to_pylist()
           for path in set(rows.column("file").to_pylist())}
    expected = [ids[path][row] for path, row in zip(rows.column("file").to_pylist(),
                                                    rows.column("row_in_file").to_pylist())]
    assert len(ids) > 1 and read.num_rows == rows.num_rows > 8
    assert read.column("id").to_pylist() == expected
    assert PauseWhenIdle in dataset.context.custom_execution_callback_classes


def test_a_finished_run_is_reused_and_a_run_can_start_from_any_checkpoint(stage1, environment):
    again = run_stage(TrainConfig(stage="pretrain", storage_path=str(environment / "runs"), **COMMON))
    assert (again.checkpoint, again.run_id) == (stage1.checkpoint, stage1.run_id)  # nothing trained again
    checkpoints = sorted(path for path in stage1.checkpoint.parent.glob("checkpoint_*")
                         if path.is_dir() and path != stage1.checkpoint)
    assert checkpoints, "the step-4 checkpoint should be kept (keep_checkpoints=2)"
    resumed = run_stage(TrainConfig(stage="pretrain", storage_path=str(environment / "runs"), run_name="from-step-4",
                                    resume_from=str(checkpoints[-1]), **COMMON))
    steps = sorted({m.step for m in MlflowClient(resumed.tracking_uri).get_metric_history(resumed.run_id, "loss")})
    assert steps == [5, 6, 7, 8] and resumed.run_id != stage1.run_id
    # The same plan from the same state: the same weights as the run that went through step 4 itself.
    ours, theirs = load_file(resumed.checkpoint / "projector.safetensors"), load_file(stage1.checkpoint /
                                                                                       "projector.safetensors")
    assert all(torch.allclose(ours[name], theirs[name], atol=1e-6) for name in theirs)


def test_a_run_trains_on_a_weighted_mix_of_data_sets(stage1, environment):
    from pipelines.defaults import embedded_model_dir
    from pipelines.train.job import embedded_data_dir
    from pipelines.train.shards import shard_index

    model = str(embedded_model_dir("cropping"))
    captions, conversations = embedded_data_dir("pretrain", model), embedded_data_dir("finetune", model)
    mixed = run_stage(TrainConfig(stage="pretrain", storage_path=str(environment / "runs"),
                                  data_mix={captions: 1.0, conversations: 0.5}, **{**COMMON, "max_steps": 2}))
    params = MlflowClient(mixed.tracking_uri).get_run(mixed.run_id).data.params
    expected_rows = shard_index(captions).num_rows + round(0.5 * shard_index(conversations).num_rows)
    assert int(params["train_rows"]) == expected_rows
    assert mixed.metrics["step"] == 2 and mixed.checkpoint.parent.name.startswith("pretrain-cropping-")


def test_validation_loss_is_logged_and_is_the_models_mean_token_loss_on_the_set(stage1, environment):
    import pyarrow as pa
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    from pipelines.defaults import embedded_model_dir
    from pipelines.train.data import collate, target_tokens, without_right_padding_mask
    from pipelines.train.job import embedded_data_dir
    from pipelines.train.shards import ShardRowReader, shard_index
    from sp_core.image_processing import LlavaSPImageProcessor

    captions = embedded_data_dir("pretrain", str(embedded_model_dir("cropping")))
    # 10 rows over 2 workers of micro-batches of 4: each worker pads its 5 rows to 8, and the padding must not count.
    result = run_stage(TrainConfig(stage="pretrain", storage_path=str(environment / "runs"), run_name="validated",
                                   validation_data=captions, eval_every=2, max_validation_rows=10,
                                   **{**COMMON, "max_steps": 4}))
    history = MlflowClient(result.tracking_uri).get_metric_history(result.run_id, "val_loss")
    assert sorted(metric.step for metric in history) == [2, 4]
    logged = next(metric.value for metric in history if metric.step == 4)

    index = shard_index(captions).slice(0, 10)
    rows = ShardRowReader()(pa.table({"position": list(range(10)), "file": index.column("file"),
                                      "row_in_file": index.column("row_in_file")}))
    model = LlavaSPForConditionalGeneration.from_pretrained(result.model_dir).eval()
    batch = collate(rows, AutoTokenizer.from_pretrained(result.model_dir).pad_token_id,
                    LlavaSPImageProcessor.from_pretrained_dir(str(result.model_dir)))
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**without_right_padding_mask(batch)).logits
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                               reduction="sum").item() / target_tokens(labels)
    assert abs(logged - expected) <= 1e-4 * expected, (logged, expected)
