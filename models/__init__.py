"""Model families built on probgen, one module per family (registered under "probgen.families")."""
