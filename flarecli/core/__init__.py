"""flare core: plain NumPy / SimpleITK logic; never imports typer or rich, never prints."""
