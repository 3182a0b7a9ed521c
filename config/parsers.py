"""The API's JSON parser: DRF's, plus a 400 for JSON nested too deeply to decode.

Python's decoder recurses per nesting level, so ``[[[[…]]]]`` a hundred thousand deep raises
RecursionError, which DRF's parser does not catch (it catches ValueError) and would be a 500.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
