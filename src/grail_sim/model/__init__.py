"""The base policy: build the embedded model offline (`embedded`), load a policy and smoke-test it
(`loading`), the cache of built artefacts (`cache`) and the reasoning vocabulary a policy may
carry (`reasoning_vocab`)."""
