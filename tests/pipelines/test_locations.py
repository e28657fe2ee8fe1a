"""A submitted job is told where to write: unset or relative locations are named before any work."""

from pipelines.locations import HOME_ENV, TRACKING_ENV, location_problems


def test_a_submitted_job_needs_absolute_locations_for_everything_it_writes():
    complete = {HOME_ENV: "/shared/llava-sp", TRACKING_ENV: "http://mlflow:5000"}
    assert location_problems({"storage_path": ""}, True, complete) == []
    assert location_problems({"storage_path": "/shared/runs", "output_dir": "s3://bucket/x"}, True, complete) == []
    assert location_problems({}, True, {}) == [f"{HOME_ENV} is not set", f"{TRACKING_ENV} is not set"]
    assert location_problems({}, False, {HOME_ENV: "runs"}) == [f"{HOME_ENV}=runs is a relative path"]
    assert location_problems({"storage_path": "runs/train"}, True, complete) == [
        "storage_path=runs/train is a relative path"]
