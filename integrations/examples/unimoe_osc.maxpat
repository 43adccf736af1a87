{
 "patcher": {
  "fileversion": 1,
  "appversion": {
   "major": 8,
   "minor": 5,
   "revision": 0,
   "architecture": "x64",
   "modernui": 1
  },
  "classnamespace": "box",
  "rect": [
   80.0,
   80.0,
   1200.0,
   520.0
  ],
  "default_fontsize": 12.0,
  "default_fontname": "Arial",
  "gridsize": [
   15.0,
   15.0
  ],
  "description": "unimoe-audio OSC example",
  "boxes": [
   {
    "box": {
     "id": "obj-c1",
     "maxclass": "comment",
     "text": "unimoe-audio over OSC: click a message; replies arrive on port 9001 (reply_port). Start the daemon first: unimoe-audio serve",
     "patching_rect": [
      20,
      10,
      700,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "msg-ping",
     "maxclass": "message",
     "text": "/unimoe/ping reply_port 9001",
     "patching_rect": [
      20,
      50,
      196,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-status",
     "maxclass": "message",
     "text": "/unimoe/status reply_port 9001",
     "patching_rect": [
      20,
      82,
      210,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-music",
     "maxclass": "message",
     "text": "/unimoe/music \"calm piano, soft pads\" seconds 2. reply_port 9001 progress 1 tag cue1",
     "patching_rect": [
      20,
      114,
      588,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-loop",
     "maxclass": "message",
     "text": "/unimoe/music \"drum loop\" bars 1 tempo_bpm 120. reply_port 9001 tag loop1",
     "patching_rect": [
      20,
      146,
      511,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-speech",
     "maxclass": "message",
     "text": "/unimoe/speech \"Hello there.\" voice narrator reply_port 9001 tag line1",
     "patching_rect": [
      20,
      178,
      490,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-long",
     "maxclass": "message",
     "text": "/unimoe/music \"long ambient bed\" seconds 30. reply_port 9001 tag long",
     "patching_rect": [
      20,
      210,
      483,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-send",
     "maxclass": "newobj",
     "text": "udpsend 127.0.0.1 9137",
     "patching_rect": [
      20,
      252,
      150,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-recv",
     "maxclass": "newobj",
     "text": "udpreceive 9001",
     "patching_rect": [
      420,
      50,
      110,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-route",
     "maxclass": "newobj",
     "text": "route /unimoe/pong /unimoe/state /unimoe/accepted /unimoe/progress /unimoe/done /unimoe/failed /unimoe/cancelled /unimoe/error",
     "patching_rect": [
      420,
      90,
      700,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 9,
     "outlettype": [
      "",
      "",
      "",
      "",
      "",
      "",
      "",
      "",
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-print-pong",
     "maxclass": "newobj",
     "text": "print unimoe-pong",
     "patching_rect": [
      420,
      140,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-state",
     "maxclass": "newobj",
     "text": "print unimoe-state",
     "patching_rect": [
      560,
      140,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-accepted",
     "maxclass": "newobj",
     "text": "print unimoe-accepted",
     "patching_rect": [
      700,
      140,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-progress",
     "maxclass": "newobj",
     "text": "print unimoe-progress",
     "patching_rect": [
      420,
      170,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-done",
     "maxclass": "newobj",
     "text": "print unimoe-done",
     "patching_rect": [
      560,
      170,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-failed",
     "maxclass": "newobj",
     "text": "print unimoe-failed",
     "patching_rect": [
      700,
      170,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-cancelled",
     "maxclass": "newobj",
     "text": "print unimoe-cancelled",
     "patching_rect": [
      420,
      200,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-error",
     "maxclass": "newobj",
     "text": "print unimoe-error",
     "patching_rect": [
      560,
      200,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-print-other",
     "maxclass": "newobj",
     "text": "print unimoe-other",
     "patching_rect": [
      700,
      200,
      130,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-unpack-prog",
     "maxclass": "newobj",
     "text": "unpack s f s s",
     "patching_rect": [
      420,
      240,
      110,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 4,
     "outlettype": [
      "",
      "float",
      "",
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-slider",
     "maxclass": "slider",
     "text": "",
     "patching_rect": [
      420,
      270,
      140,
      20
     ],
     "numinlets": 1,
     "numoutlets": 1,
     "outlettype": [
      ""
     ],
     "size": 1.0,
     "floatoutput": 1,
     "orientation": 1
    }
   },
   {
    "box": {
     "id": "obj-unpack-done",
     "maxclass": "newobj",
     "text": "unpack s s f s",
     "patching_rect": [
      600,
      240,
      110,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 4,
     "outlettype": [
      "",
      "",
      "float",
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-replace",
     "maxclass": "message",
     "text": "replace $1",
     "patching_rect": [
      600,
      270,
      80,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-buffer",
     "maxclass": "newobj",
     "text": "buffer~ unimoe",
     "patching_rect": [
      600,
      300,
      100,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 2,
     "outlettype": [
      "float",
      "bang"
     ]
    }
   },
   {
    "box": {
     "id": "obj-unpack-acc",
     "maxclass": "newobj",
     "text": "unpack s i s",
     "patching_rect": [
      760,
      240,
      90,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 3,
     "outlettype": [
      "",
      "int",
      ""
     ]
    }
   },
   {
    "box": {
     "id": "msg-cancel",
     "maxclass": "message",
     "text": "/unimoe/cancel $1 reply_port 9001",
     "patching_rect": [
      760,
      300,
      230,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   },
   {
    "box": {
     "id": "obj-c2",
     "maxclass": "comment",
     "text": "cancel the last accepted job: click after a request was accepted",
     "patching_rect": [
      760,
      330,
      330,
      22.0
     ],
     "numinlets": 1,
     "numoutlets": 0
    }
   },
   {
    "box": {
     "id": "obj-set",
     "maxclass": "message",
     "text": "set /unimoe/cancel $1 reply_port 9001",
     "patching_rect": [
      760,
      270,
      230,
      22.0
     ],
     "numinlets": 2,
     "numoutlets": 1,
     "outlettype": [
      ""
     ]
    }
   }
  ],
  "lines": [
   {
    "patchline": {
     "source": [
      "msg-ping",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-status",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-music",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-loop",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-speech",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-long",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-recv",
      0
     ],
     "destination": [
      "obj-route",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      0
     ],
     "destination": [
      "obj-print-pong",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      1
     ],
     "destination": [
      "obj-print-state",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      2
     ],
     "destination": [
      "obj-print-accepted",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      3
     ],
     "destination": [
      "obj-print-progress",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      4
     ],
     "destination": [
      "obj-print-done",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      5
     ],
     "destination": [
      "obj-print-failed",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      6
     ],
     "destination": [
      "obj-print-cancelled",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      7
     ],
     "destination": [
      "obj-print-error",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      8
     ],
     "destination": [
      "obj-print-other",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      3
     ],
     "destination": [
      "obj-unpack-prog",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-unpack-prog",
      1
     ],
     "destination": [
      "obj-slider",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      4
     ],
     "destination": [
      "obj-unpack-done",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-unpack-done",
      1
     ],
     "destination": [
      "obj-replace",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-replace",
      0
     ],
     "destination": [
      "obj-buffer",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-route",
      2
     ],
     "destination": [
      "obj-unpack-acc",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-unpack-acc",
      0
     ],
     "destination": [
      "obj-set",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "obj-set",
      0
     ],
     "destination": [
      "msg-cancel",
      0
     ]
    }
   },
   {
    "patchline": {
     "source": [
      "msg-cancel",
      0
     ],
     "destination": [
      "obj-send",
      0
     ]
    }
   }
  ]
 }
}