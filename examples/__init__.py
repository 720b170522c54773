"""Runnable examples for inorder (``python -m examples.chat_backend``)."""
