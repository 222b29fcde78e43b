<?php
// Benchmark anchor, copied unchanged from the anchor set of issue 5 (../shared/anchors/ beside the repository); only this header comment was added.
// The seed webmail's way of checking mail: imap_open + imap_status + imap_close per check.
// usage: php imap_anchor.php PORT USER PW ROUNDS  -> median ms per check, and per "list 20 newest"
[$_, $port, $user, $pw, $rounds] = $argv;
$mbox = "{127.0.0.1:$port/notls}INBOX";
$checks = []; $lists = [];
for ($i = 0; $i < (int)$rounds; $i++) {
  $t = microtime(true);
  $imap = imap_open($mbox, $user, $pw, OP_READONLY, 1);
  $st = imap_status($imap, $mbox, SA_MESSAGES | SA_UNSEEN);
  imap_close($imap);
  $checks[] = (microtime(true) - $t) * 1000;
  $t = microtime(true);
  $imap = imap_open($mbox, $user, $pw, OP_READONLY, 1);
  $n = imap_num_msg($imap);
  for ($k = $n; $k > max(0, $n - 20); $k--) { $h = imap_headerinfo($imap, $k); }
  imap_close($imap);
  $lists[] = (microtime(true) - $t) * 1000;
}
imap_errors(); imap_alerts();
sort($checks); sort($lists);
printf("php check_ms=%.2f list20_ms=%.2f messages=%d\n", $checks[intdiv(count($checks),2)], $lists[intdiv(count($lists),2)], $st->messages);
