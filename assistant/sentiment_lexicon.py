"""The word list behind :mod:`assistant.sentiment`, written for llmos (customer service, English).

Valences run from -4 (worst) to +4 (best), on VADER's scale. Multi-word entries are matched
before single words. Lines are ``entry<TAB or 2+ spaces>valence``; ``#`` starts a comment.
Kept as a Python module so it ships inside the package with no data-file configuration.
"""

LEXICON = """
# -- general positive ------------------------------------------------------------------------
good 1.9
great 3.1
excellent 3.2
amazing 3.1
awesome 3.1
fantastic 3.2
brilliant 3.0
wonderful 3.0
superb 3.1
perfect 3.0
perfectly 2.6
lovely 2.8
love 3.2
loved 3.0
loves 3.0
like 1.3
liked 1.6
nice 1.8
nicest 2.6
beautiful 2.9
gorgeous 3.0
stunning 2.9
best 3.2
better 1.9
happy 2.7
glad 2.1
pleased 2.3
delighted 3.1
satisfied 2.0
impressed 2.6
thanks 1.9
thank 1.5
thx 1.6
cheers 1.6
appreciated 2.4
appreciate 2.2
grateful 2.6
helpful 2.2
useful 1.9
kind 1.8
friendly 2.2
patient 1.4
quick 1.2
fast 1.2
quickly 1.0
easy 1.6
painless 1.9
smooth 1.5
soft 1.3
comfy 2.0
comfortable 2.0
cosy 1.9
cozy 1.9
warm 0.9
solid 1.3
quiet 0.8
premium 1.5
favourite 2.3
favorite 2.3
recommend 2.0
recommended 1.9
well 0.7
fine 0.8
ok 0.6
okay 0.6
fixed 1.3
sorted 1.6
resolved 1.8
works 0.6
worked 1.2
exactly 0.8
value 0.8
wow 2.3
yay 2.4
lol 1.0
gift 0.6
enjoy 2.2
enjoyed 2.3
# -- general negative ------------------------------------------------------------------------
bad -2.5
poor -2.3
terrible -3.1
awful -3.1
horrible -3.1
dreadful -3.0
worst -3.3
worse -2.2
hate -3.0
hated -3.0
useless -2.8
rubbish -2.6
garbage -2.8
disgusted -3.2
disgusting -3.2
disappointed -2.6
disappointing -2.5
disappointment -2.6
unhappy -2.5
sad -2.1
upset -2.3
angry -2.8
annoyed -2.3
annoying -2.3
frustrated -2.5
frustrating -2.5
furious -3.3
ridiculous -2.5
unacceptable -3.0
unbelievable -1.6
shocking -2.6
rude -2.6
misleading -2.3
regret -2.3
shame -1.8
nightmare -3.0
disaster -3.1
joke -1.6
mess -2.0
complaint -1.6
complain -1.8
problem -1.7
problems -1.7
issue -1.2
issues -1.2
fault -1.4
wrong -1.6
unsafe -2.3
dangerous -2.5
dangerously -2.3
expensive -1.3
overpriced -2.2
slow -1.5
noisy -1.4
cheap -1.0
flimsy -2.1
wasted -2.2
waste -2.4
fail -2.2
failed -2.3
fails -2.2
scam -3.2
lied -2.8
lies -2.6
lie -2.4
ignored -2.3
ignoring -2.3
sorry -0.6
unfortunately -1.3
sadly -1.5
worried -1.5
# -- products and orders gone wrong ------------------------------------------------------------
broken -2.6
broke -2.3
breaks -2.1
cracked -2.3
chipped -1.9
damaged -2.4
dented -1.8
faulty -2.5
defective -2.6
leaks -2.0
leaking -2.0
leak -1.8
rusty -2.0
rusted -2.1
rust -1.5
warped -2.1
flaking -1.9
peeling -1.7
stained -1.6
smells -1.2
smelly -1.8
shedding -1.6
flat -0.8
flickers -1.7
missing -2.0
lost -1.9
late -1.6
delay -1.7
delayed -1.8
delays -1.8
died -2.3
dead -2.3
crashing -2.0
crashed -2.0
crashes -2.0
loose -1.1
stuck -1.5
misery -2.8
wrecked -2.8
unusable -2.9
# -- phrases (matched first) -------------------------------------------------------------------
waste of money -3.0
waste of time -2.8
thanks for nothing -3.0
yeah right -2.0
so much for -1.8
fed up -2.6
had enough -2.6
give up -1.6
sort it out -1.6
still no -1.6
still not -1.4
still waiting -2.1
still hasn't -1.5
still haven't -1.5
no one -1.2
nobody -1.4
never arrived -2.6
not arrived -2.0
charged twice -2.3
cut off -1.7
on hold -1.0
stopped working -2.6
fell apart -2.6
falling apart -2.5
not working -2.3
doesn't work -2.3
don't work -2.3
won't close -1.6
won't work -2.2
let down -2.3
rip off -3.0
ripped off -3.0
above and beyond 3.0
spot on 2.3
all good 2.0
no problems 1.8
no problem 1.5
no complaints 2.1
can't fault 2.3
cannot fault 2.3
made my day 3.0
well done 2.6
good job 2.5
five stars 3.0
5 stars 3.0
one star -2.6
1 star -2.6
never again -2.6
ever again -1.5
never going to -1.0
i give up -2.2
what a waste -2.8
last straw -2.8
not impressed -2.3
not happy -2.5
not satisfied -2.3
not good enough -2.4
like to 0
not bad 1.5
not too bad 1.2
expected better -1.9
expected much better -2.2
expected more -1.5
third time -1.8
second time -1.0
without telling -1.6
without notice -1.6
without warning -1.6
not what i ordered -2.2
any longer -1.2
any more -0.6
would like 0
i'd like 0
looks like 0
# -- emoticons and emoji -----------------------------------------------------------------------
:) 2.0
:-) 2.0
:d 2.4
(: 1.8
;) 1.5
<3 2.6
:( -2.2
:-( -2.2
:'( -2.6
>:( -2.9
:/ -1.3
😀 2.4
😃 2.4
😄 2.4
😁 2.3
😊 2.4
🙂 1.8
😍 3.0
🥰 3.0
😘 2.2
❤️ 2.8
❤ 2.8
💚 2.6
👍 2.0
👏 2.2
🙏 1.6
🎉 2.4
⭐ 1.6
😞 -2.3
😔 -2.1
😢 -2.4
😭 -2.6
😠 -2.8
😡 -3.1
🤬 -3.3
😤 -2.5
🙄 -1.9
👎 -2.3
💩 -2.6
😒 -2.0
😩 -2.3
😫 -2.3
"""
