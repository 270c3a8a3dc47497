from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="scbus",
    version="0.1.0",
    description="A message bus for Twisted whose applications are plain Python callables",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    license="MIT",
    license_files=["LICENSE"],
    # find_packages() cannot see twisted.plugins (no __init__.py, on purpose: one would
    # hide the plugin), so it is listed by name.
    packages=find_packages(include=["scbus", "scbus.*"]) + ["twisted.plugins"],
    # py.typed: type checkers read scbus's own annotations (PEP 561), so a user's
    # project checks its messages' fields and the handlers' types.
    package_data={"scbus": ["py.typed"], "twisted.plugins": ["scbus_plugin.py"], "scbus.web": ["static/*"]},
    install_requires=["Twisted>=24.7", "zope.interface>=6", "pika>=1.4,<2", "prometheus-client>=0.17"],
    extras_require={
        "ssh": ["Twisted[conch]>=24.7"],
        "tls": ["Twisted[tls]>=24.7"],
        "txamqp": ["txAMQP==0.8.2"],
        # OpenTelemetry tracing (bus.tracing): the API alone; the SDK and exporters are the
        # deployment's choice (docs/operations.md).
        "otel": ["opentelemetry-api>=1.20"],
        # The embedded peers bench/sqlite_relay.py measures the SQLite transport against.
        "bench": ["persist-queue>=1.0", "huey>=2.5", "litequeue>=0.9"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6", "Twisted[tls,conch]>=24.7", "txAMQP==0.8.2", "selenium>=4.10", "jsonschema>=4.18",
                 "opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20",
                 "mypy>=1.10", "mypy-zope>=1.0.5", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["scbus = scbus.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
    ],
)
