#!/usr/bin/php -q
<?php
// Benchmark anchor, copied unchanged from the anchor set of issue 5 (../shared/anchors/ beside the repository); only this header comment was added.
// Port of the seed's pcntl_fork() per-client server ("PHP를 이용한 다중 연결 소켓
// 통신 (3)", PHP 4.3 era) to PHP 8 with the fewest possible changes.  PHP 8
// rejects nothing in this one; the only changes (marked "BENCH:") are the bind
// address/port.
// Kept as in the original: one forked child per connection (SIGCHLD ignored ->
// children auto-reaped); reply to `time` is the bare date WITHOUT newline; raw
// 4096-byte reads, command = first 4 bytes; listen backlog 0 (PHP default);
// msg() logs to stdout (the benchmark redirects stdout/stderr to /dev/null).
// Note: the parent never closes the accepted socket explicitly; in PHP 8 it is
// closed when $sock is overwritten by the next socket_accept().
set_time_limit(0);

define("_IP", "127.0.0.1");                 // BENCH: was "111.222.333.12"
define("_PORT", (int)$argv[1]);             // BENCH: was "65000"

$sSock = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);

socket_bind($sSock, _IP, _PORT);
socket_listen($sSock);

pcntl_signal(SIGCHLD, SIG_IGN);

while($sock = socket_accept($sSock))
{
socket_getpeername($sock, $sockIp, $sockPort);
msg("client connect : ".$sockIp.":".$sockPort."\n");

$pid = pcntl_fork();
msg("fork\n");
if($pid == -1)
{
msg("fork failed\n");
exit;
// 자식 프로세스 일때
}if($pid == 0)
{
while(1)
{
$buf = socket_read($sock, 4096);

// 접속 종료
if(!$buf)
{
msg("client connection broken : ".$sockIp.":".$sockPort."\n");
exit;
}
// 메시지 수신 이벤트
else
{
msg("recive data : ".$buf."\n");
$cmd = substr($buf, 0, 4);
switch($cmd)
{
// 시간전송
case "time":
msg("client(".$sockPort.") time data request\n");
socket_write($sock, date("Y/m/d H:i:s"));
break;

// 종료
case "quit":
msg("client(".$sockPort.") quit request\n");
socket_write($sock, "quit");
socket_close($sock);
exit;
break;
default:
msg("client(".$sockPort.") invalid command $cmd\n");
break;
}
}
}
}
}

function msg($msg)
{
echo "SERVER >> ".$msg;
}
?>
