"""unimoe_audio.daemon"""
