"""The completion core: context, prompt, post-processing and the pipeline that joins them; no engine, no I/O loop."""
