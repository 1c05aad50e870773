"""Reference optimisers and diagnostics on the shared VGG loss network.

Gatys style transfer, texture synthesis, DeepDream, feature inversion and unit visualisation are one
optimisation loop (``optimize.optimize``) over different objectives (``objectives``), image
initialisations (``param``) and robustness transforms (``transforms``), as in lucent; coarse-to-fine
runs go through one ``pyramid.ImagePyramid``. Attribution methods (``attribution``) follow captum:
one class per method, ``attribute(inputs, target=...)``, with their targets built in ``targets``.
``evaluate`` scores a trained fast net against the Gatys optimum under its own loss settings.
"""
