"""The model tools' command lines (llava-sp-init, llava-sp-convert): the jobs' key=value style, over sp_core's
functions."""
