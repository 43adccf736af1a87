"""unimoe_audio.client"""
