"""gRPC serving of exported style-transfer models: ``serving.server`` (the server; steps of a request in
``serving.pipeline``, models in ``serving.models``, settings in ``serving.config``, TLS and token in
``serving.security``, drain and shutdown in ``serving.lifecycle``, reflection in ``serving.reflection``),
``serving.client``."""
