"""vdcnn: very deep convolutional networks for text classification."""

__version__ = "0.1.0"
