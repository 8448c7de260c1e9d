"""Views of the evaluation for people: audit (text, JSON, DOT, HTML), openness and contamination
reports.
"""
