from lwcontainer.cli import run

run()
