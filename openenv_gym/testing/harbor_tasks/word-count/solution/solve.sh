#!/bin/bash
wc -w < /work/text.txt > /work/count.txt
