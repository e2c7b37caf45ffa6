"""Synthesis around the model: boxes, the model's window, the feathered paste-back, outputs.

`pipeline.synthesize_into_scan` takes a scan, boxes and an injected `generate` callable and returns
results on the scan's own grid; `pipeline.write_outputs` writes them with a preview and a manifest.
"""
