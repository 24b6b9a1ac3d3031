"""tsd-agent: the printer's side of linking, as a small command-line program.

It talks to a tsd-server over HTTP only (it never imports the server package), so it can
run on a printer's controller with nothing but ``requests`` and ``segno`` installed.
"""

__version__ = "0.1.0"
