"""`openr eval`: accuracy against search budget, measured through the HTTP API.

The evaluator is a client like any other: it sends each problem under each
search setting to an OpenAI-compatible server with the OpenAI SDK and grades the
answers with `openr.tasks`, so it measures exactly what users of the server get.
"""
