"""The bundled systems under drill."""
