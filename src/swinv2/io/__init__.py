"""Files in and out: atomic writes, safe checkpoint reading, key maps between layouts, layout
detection, Hub resolution. The bottom tier: it imports torch, safetensors and the standard library only."""
