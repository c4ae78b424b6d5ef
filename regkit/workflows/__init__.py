"""Jobs that combine the engines: a cascade's prediction refined by the optimiser
(:mod:`regkit.workflows.predict_and_refine`) and cohorts of pairs (:mod:`regkit.workflows.cohort`).
Above ``regkit.nn`` and ``regkit.optimize``, below the CLI."""
