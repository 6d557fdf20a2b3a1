"""Inference engines (EM, SVI, NUTS), the ``fit`` dispatcher and the ``Fit`` record."""
