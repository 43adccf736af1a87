"""unimoe_audio.gui"""
