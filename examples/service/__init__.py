"""A FastAPI service on eventcore (see :mod:`service.app`)."""
