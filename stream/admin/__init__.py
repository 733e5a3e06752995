"""The admin side of a deployment: who may use it (``auth``), and the admin API and console served on the worker's
HTTP port."""
