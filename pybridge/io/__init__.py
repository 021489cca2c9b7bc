"""Model files: pybridge model directories (safetensors + JSON) and scvi-tools model files."""
