"""Scorer models: plain components and the LightningModule that trains them."""
