"""`GenerationConfig` with transformers' field names. It holds the fields the caller set; lmgen's
own parser (the Rust library) checks them, so a bad value raises `ValueError` naming the field.
As in transformers 5, a field that was not set reads as `None` (the model's default applies)."""

import copy
import json

from . import _lmgen


class GenerationConfig:
    """transformers' `GenerationConfig(**kwargs)`."""

    def __init__(self, **kwargs):
        object.__setattr__(self, "_fields", {})
        for key, value in kwargs.items():
            self._fields[key] = value
        self.validate()

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._fields[name] = value

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self.__dict__["_fields"].get(name)

    def __eq__(self, other):
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"GenerationConfig {self.to_json_string()}"

    def validate(self, strict=False):
        """Checks the set fields as generate() will read them (`ValueError` naming the field)."""
        _lmgen.parse_generation_config(self._json())

    def _json(self):
        return json.dumps(self._fields, default=_jsonable)

    def to_dict(self):
        """The set fields."""
        return copy.deepcopy(self._fields)

    def to_diff_dict(self):
        return self.to_dict()

    def to_json_string(self, use_diff=True):
        return json.dumps(self._fields, indent=2, sort_keys=True, default=_jsonable) + "\n"

    def update(self, **kwargs):
        """Sets the given fields; returns the kwargs that are not fields (as transformers)."""
        unused = {}
        for key, value in kwargs.items():
            self._fields[key] = value
        self.validate()
        return unused

    def copy(self):
        return GenerationConfig(**self.to_dict())

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name, config_file_name=None, **kwargs):
        """A checkpoint's `generation_config.json` (or `config.json`'s generation fields)."""
        fields = json.loads(_lmgen.generation_config_from_pretrained(str(pretrained_model_name)))
        fields.update(kwargs)
        config = cls.__new__(cls)
        object.__setattr__(config, "_fields", fields)
        return config

    def save_pretrained(self, save_directory):
        import os

        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, "generation_config.json"), "w") as f:
            f.write(self.to_json_string())


def _jsonable(value):
    """Tensors and NumPy values in a config (e.g. `eos_token_id=torch.tensor(2)`) as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
