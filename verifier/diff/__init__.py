"""Comparing what two builds produced: safetensors, GGUF and JSON, tensor by tensor; and the
environment drift between a record and its rebuild, in the order a reader needs it.
"""
