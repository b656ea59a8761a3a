"""The tool's version, on the ground floor so that every layer can stamp it on what it writes
(conversion records, verification reports, model cards, Hub commits) without importing the
package's public face, which sits on top of all of them."""

__version__ = "0.1.0"
