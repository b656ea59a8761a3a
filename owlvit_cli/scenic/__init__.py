"""scenic"""
