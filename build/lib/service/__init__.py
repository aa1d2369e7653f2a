"""The REST service: FastAPI on uvicorn, serving the registered Latent ODE forecaster.

``service.app.create_app(settings)`` builds the app, ``service.server.run(host, port)`` serves it;
docs/service.md describes the endpoints and settings. Importing this package does no work.
"""
