#!/usr/bin/php -q
<?php
// Benchmark anchor, copied unchanged from the anchor set of issue 5 (../shared/anchors/ beside the repository); only this header comment was added.
// Port of the seed's socket_select() server ("PHP를 이용한 다중 연결 소켓 통신 (2)",
// PHP 4.3 era) to PHP 8 with the fewest possible changes.  Changes, all marked
// "PHP8:" or "BENCH:" below:
//   BENCH: bind 127.0.0.1 and the port given as argv[1] (was a fixed IP/65000)
//   PHP8:  `$tWrite = NULL` inside a by-reference argument is an Error in PHP 8
//          ("Argument #2 ($write) cannot be passed by reference") -> assign first
//   PHP8:  call-time pass-by-reference `exceptSocket(&$cSock, ...)` is a parse
//          error since PHP 5.4 -> dropped the `&` at the call site (the function
//          already declares its parameters by reference)
//   PHP8:  sockets are Socket objects, not resources; an object as array key is
//          a TypeError ("Illegal offset type") -> key by spl_object_id($sock),
//          the analogue of PHP 4's resource id
// Kept as in the original: reply to `time` is the bare date WITHOUT newline;
// reads are raw 4096-byte chunks and the command is the first 4 bytes (so
// pipelined commands in one chunk get ONE reply); listen backlog 0 (PHP default);
// select() is limited to FD_SETSIZE=1024 descriptors; msg() logs to stdout
// (the benchmark redirects stdout/stderr to /dev/null).
set_time_limit(0);

define("_IP", "127.0.0.1");                 // BENCH: was "111.222.333.12"
define("_PORT", (int)$argv[1]);             // BENCH: was "65000"
define("_TIMEOUT", 10);


$cSock = array();
$cInfo = array();
$sSock = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);

socket_bind($sSock, _IP, _PORT);
socket_listen($sSock);

while(1)
{
$sockArr = array_merge(array($sSock), $cSock);
$tWrite = NULL; $tExcept = NULL;             // PHP8: was passed as `$tWrite = NULL` inline
if(socket_select($sockArr, $tWrite, $tExcept, _TIMEOUT) > 0)
{
foreach($sockArr as $sock)
{
// Listen 하고 있는 서버 소켓일 경우
// 새로운 클라이언트의 접속을 의미
if($sock == $sSock)
{
$tSock = socket_accept($sSock);

socket_getpeername($tSock, $sockIp, $sockPort);

$cSock[spl_object_id($tSock)] = $tSock;     // PHP8: was $cSock[$tSock]
$cInfo[spl_object_id($tSock)] = array('ip'=>$sockIp, 'port'=>$sockPort);   // PHP8: was $cInfo[$tSock]

msg("client connect : ".$sockIp.":".$sockPort."\n");
}
// 클라이언트 접속해 있는 소켓중 하나일경우
// 해당 클라이언트에서 이벤트가 발생함을 의미
else
{
$buf = socket_read($sock, 4096);

// 접속 종료
if(!$buf)
{
exceptSocket($cSock, $cInfo, $sock);         // PHP8: was exceptSocket(&$cSock, &$cInfo, $sock)
msg("client connection broken : ".$sockIp.":".$sockPort."\n");
}
// 메시지 수신 이벤트
else
{
msg("recive data : ".$buf."\n");
$thisSockInfo = $cInfo[spl_object_id($sock)];   // PHP8: was $cInfo[$sock]
$cmd = substr($buf, 0, 4);
switch($cmd)
{
// 시간전송
case "time":
msg("client(".$thisSockInfo['port'].") time data request\n");
socket_write($sock, date("Y/m/d H:i:s"));
break;

// 종료
case "quit":
msg("client(".$thisSockInfo['port'].") quit request\n");
socket_write($sock, "quit");
socket_close($sock);
exceptSocket($cSock, $cInfo, $sock);         // PHP8: was exceptSocket(&$cSock, &$cInfo, $sock)
break;
default:
msg("client(".$thisSockInfo['port'].") invalid command $cmd\n");
break;
}
}
}
}
}
}

function exceptSocket(&$sockSet, &$infoSet, $sock)
{
unset($sockSet[spl_object_id($sock)]);      // PHP8: was unset($sockSet[$sock])
unset($infoSet[spl_object_id($sock)]);      // PHP8: was unset($infoSet[$sock])
// array_merge 함수에서 error 발생을 막기위한 처리
if(count($sockSet)==0)
{
$sockSet = array();
$infoSet = array();
}
}

function msg($msg)
{
echo "SERVER >> ".$msg;
}
?>
