"""The model on the host: its facts (read with onnx only), predicted compatibility, graph rewriting."""
