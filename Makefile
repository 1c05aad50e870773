# The two commands of README: `make serve` (serve the shipped checkpoints) and `make test`.
# Both build the cached virtual environment on first use (scripts/env.sh). `make serve` listens on
# 127.0.0.1 (this machine only); `make serve HOST=0.0.0.0` opens it to the network (see README: TLS, token).
HOST ?= 127.0.0.1
PORT ?= 50051
MODELS ?= checkpoints

.PHONY: serve test env
env:
	@scripts/env.sh >/dev/null

serve:
	@venv=$$(scripts/env.sh) && "$$venv/bin/styletrain" serve --models $(MODELS) --host $(HOST) --port $(PORT)

test:
	@venv=$$(scripts/env.sh) && "$$venv/bin/python" -m pytest -q
