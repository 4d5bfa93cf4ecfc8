"""The get_config() files of the commands (`--config configs/NAME.py`); installed as
jaxrej.configs."""
