"""Comparing what two builds produced: safetensors, GGUF and JSON, tensor by tensor.
"""
