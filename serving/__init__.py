"""gRPC serving of exported style-transfer models: ``serving.server`` (the server), ``serving.client``."""
