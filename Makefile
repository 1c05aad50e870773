# The two commands of README: `make serve` (serve the shipped checkpoints) and `make test`.
# Both build the cached virtual environment on first use (scripts/env.sh).
PORT ?= 50051
MODELS ?= checkpoints

.PHONY: serve test env
env:
	@scripts/env.sh >/dev/null

serve:
	@venv=$$(scripts/env.sh) && "$$venv/bin/styletrain" serve --models $(MODELS) --port $(PORT)

test:
	@venv=$$(scripts/env.sh) && "$$venv/bin/python" -m pytest -q
