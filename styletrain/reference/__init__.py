"""Reference optimisers and diagnostics on the shared VGG loss network.

Gatys style transfer, texture synthesis, DeepDream, feature inversion and unit visualisation are one
optimisation loop (``optimize.optimize``) over different objectives (``objectives``), image
initialisations (``param``) and robustness transforms (``transforms``), as in lucent. Attribution
methods (``attribution``) follow captum: one class per method, ``attribute(inputs, target=...)``.
``evaluate`` scores a trained fast net against the Gatys optimum under its own loss settings.
"""
