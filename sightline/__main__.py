from sightline.cli import main

main(prog_name="sightline")
