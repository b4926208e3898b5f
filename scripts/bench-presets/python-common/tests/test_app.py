import flask
import requests


def test_the_dependencies_import():
    app = flask.Flask("bench")
    assert app.name == "bench"
    assert requests.__version__
