"""The device layer: one package per vendor; only this layer imports a vendor library."""
