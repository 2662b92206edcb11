"""The root ``edgevit`` click group; command modules attach to it."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgevit")
def cli() -> None:
    """edgevit: quantize, lower, verify and profile mobile vision transformers for edge devices."""
