"""The base policy: build the embedded model offline (`embedded`), load a policy and smoke-test it
(`loading`)."""
