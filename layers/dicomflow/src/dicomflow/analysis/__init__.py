"""Lung analysis of a 4D-CT scan: HU volumes per phase, an ONNX model, metrics and DICOM outputs.

Heavy imports (onnxruntime, highdicom, pillow) happen inside the modules that need them, so that
importing :mod:`dicomflow.analysis` stays cheap.
"""
