import typer

app = typer.Typer(help="placeholder until the data layer lands")
