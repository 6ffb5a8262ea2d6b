"""The offline side: datasets, torch models, training for every method, the torch reference
samplers, ONNX export and benchmarks. Imports torch; the onboard package never imports this."""
