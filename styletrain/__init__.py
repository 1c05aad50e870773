"""styletrain: trainable fast neural style transfer (Johnson et al. 2016, Dumoulin et al. 2017).

Importing the package has no side effects; the heavy pieces live in their own modules:
``vgg`` (the frozen loss network), ``losses``, ``transformer``, ``data``, ``module`` (Lightning),
``runtime`` (running trained models), ``export`` (ONNX), ``reference`` (Gatys and diagnostics).
"""

__version__ = "0.1.0"
