"""sagerl: learned scheduling of LLM inference.

Data flows one way::

    workload -> predictor -> cost -> policy -> simulator | live router -> metrics

The core package (everything in ``sagerl`` except ``cli``) imports neither ``envs`` nor
``agents``; see ``docs/architecture.md``.
"""

__version__ = "0.1.0"
