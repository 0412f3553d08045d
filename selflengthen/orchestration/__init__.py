"""The library side of the pipeline (docs/architecture.md, principle 8): what the KFP components call.

``layout`` (deterministic URIs per run, phase and stage), ``steps`` (one function per component),
``serving`` (serve and teardown, locally or on Kubernetes), ``training`` (where a role trains from
and where it runs), ``heldout`` (the fixed held-out queries), ``reporting`` (the report step) and
``local`` (the local runner: the pipeline under kfp.local). Modules import their heavy parts
lazily, so a step's process loads only what it uses.
"""
